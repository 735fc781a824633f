//! The log writer: every thread appends its finished lines to one shared buffer, and one background thread writes that buffer out in batches (one `write` per batch, not per line), so a logged request costs a copy, not a system call or a wake-up; connection workers gather their access lines and hand them over a few KiB at a time, so a request does not even take the shared lock.
//!
//! Nothing is dropped: when more than [`MAX_PENDING`] bytes wait (the output is stuck or slower
//! than the lines come), writers wait for room. A line reaches the output at most [`LINGER`] after
//! it was appended, or sooner once [`FLUSH_AT`] bytes are waiting; a worker's gathered lines are
//! appended when [`LOCAL_BATCH`] bytes are gathered or the worker goes idle. [`LogGuard`] (dropped
//! when the process ends normally) writes out what is left.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer thread lets lines gather before writing them.
pub const LINGER: Duration = Duration::from_millis(20);
/// Waiting bytes that make the writer thread write at once.
pub const FLUSH_AT: usize = 64 * 1024;
/// Waiting bytes beyond which writers wait (logging slows requests rather than losing lines).
pub const MAX_PENDING: usize = 8 * 1024 * 1024;

struct State {
    buf: Vec<u8>,
    /// The writer thread has been told to finish.
    stop: bool,
    /// The writer thread has ended: lines go straight to the output.
    gone: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Lines arrived in an empty buffer, a big batch is waiting, or stop.
    ready: Condvar,
    /// A batch was taken: writers waiting for room may go on.
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A [`MakeWriter`] for `tracing_subscriber::fmt` (cheap to clone) whose lines are batched.
#[derive(Clone)]
pub struct LogSink {
    shared: Arc<Shared>,
    out: Arc<Mutex<Box<dyn Write + Send>>>,
}

/// Writes out what is left and ends the writer thread when dropped.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LogSink {
    /// A sink writing to `out` from a thread named `log-writer`.
    pub fn new(out: Box<dyn Write + Send>) -> io::Result<(LogSink, LogGuard)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buf: Vec::with_capacity(FLUSH_AT),
                stop: false,
                gone: false,
            }),
            ready: Condvar::new(),
            room: Condvar::new(),
        });
        let out = Arc::new(Mutex::new(out));
        let sink = LogSink {
            shared: shared.clone(),
            out: out.clone(),
        };
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || writer_loop(&s, &out))?;
        Ok((
            sink,
            LogGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }

    /// Appends one or more whole lines.
    pub fn append(&self, line: &[u8]) {
        let mut g = self.shared.lock();
        while g.buf.len() > MAX_PENDING && !g.gone {
            g = self.shared.room.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        if g.gone {
            drop(g);
            let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
            let _ = out.write_all(line);
            let _ = out.flush();
            return;
        }
        let was_empty = g.buf.is_empty();
        g.buf.extend_from_slice(line);
        let big = g.buf.len() >= FLUSH_AT && g.buf.len() - line.len() < FLUSH_AT;
        drop(g);
        // Only the first line of a batch (and the one that makes it big) wakes the writer: one
        // wake-up per batch, not per line.
        if was_empty || big {
            self.shared.ready.notify_one();
        }
    }
}

fn writer_loop(shared: &Shared, out: &Mutex<Box<dyn Write + Send>>) {
    let mut batch: Vec<u8> = Vec::with_capacity(FLUSH_AT);
    loop {
        let mut g = shared.lock();
        while g.buf.is_empty() && !g.stop {
            g = shared.ready.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        if g.buf.is_empty() && g.stop {
            g.gone = true;
            drop(g);
            shared.room.notify_all();
            return;
        }
        if g.buf.len() < FLUSH_AT && !g.stop {
            // Let more lines join this batch.
            g = shared
                .ready
                .wait_timeout(g, LINGER)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        std::mem::swap(&mut g.buf, &mut batch);
        // Do not keep a huge buffer after a burst.
        if g.buf.capacity() > 4 * FLUSH_AT {
            g.buf = Vec::with_capacity(FLUSH_AT);
        }
        drop(g);
        shared.room.notify_all();
        let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
        if o.write_all(&batch).and_then(|()| o.flush()).is_err() {
            // Nowhere to report it: the output itself is what failed. The lines are gone, as
            // they would be with a direct write; later lines are tried again.
        }
        drop(o);
        batch.clear();
        if batch.capacity() > 4 * FLUSH_AT {
            batch = Vec::with_capacity(FLUSH_AT);
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.ready.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Bytes of lines a batching thread gathers before handing them to the shared buffer.
pub const LOCAL_BATCH: usize = 4 * 1024;

thread_local! {
    /// This thread's lines not yet handed over (`None`: the thread does not batch).
    static LOCAL: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
    /// Where a thread that does not batch writes a line before appending it.
    static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// From now on this thread gathers its [`LogSink::append_with`] lines and hands them over
/// [`LOCAL_BATCH`] bytes at a time, not one by one (each hand-over takes the lock every thread
/// shares). The thread must call [`flush_this_thread`] whenever it goes idle and before it ends:
/// the connection workers do both (a runtime park hook, and after their runtime returns).
pub fn batch_this_thread() {
    LOCAL.with(|l| *l.borrow_mut() = Some(String::with_capacity(LOCAL_BATCH)));
}

/// Hands this thread's gathered lines to the installed sink (nothing to do for a thread that
/// does not batch, or has nothing gathered: a thread-local read).
pub fn flush_this_thread() {
    if let Some((sink, _)) = installed() {
        sink.flush_local();
    }
}

impl LogSink {
    /// Appends the whole lines `write` adds to the string it is given: written straight into
    /// this thread's gathered lines on a thread that batches ([`batch_this_thread`]), otherwise
    /// into a scratch string and appended at once.
    pub fn append_with(&self, write: impl FnOnce(&mut String)) {
        let write = LOCAL.with(|l| {
            let Ok(mut l) = l.try_borrow_mut() else {
                return Some(write);
            };
            let Some(b) = l.as_mut() else {
                return Some(write);
            };
            write(b);
            if b.len() >= LOCAL_BATCH {
                self.append(b.as_bytes());
                b.clear();
                if b.capacity() > 4 * LOCAL_BATCH {
                    *b = String::with_capacity(LOCAL_BATCH);
                }
            }
            None
        });
        if let Some(write) = write {
            SCRATCH.with(|s| match s.try_borrow_mut() {
                Ok(mut s) => {
                    s.clear();
                    write(&mut s);
                    self.append(s.as_bytes());
                    if s.capacity() > 64 * 1024 {
                        *s = String::new();
                    }
                }
                Err(_) => {
                    let mut s = String::new();
                    write(&mut s);
                    self.append(s.as_bytes());
                }
            });
        }
    }

    fn flush_local(&self) {
        LOCAL.with(|l| {
            if let Ok(mut l) = l.try_borrow_mut() {
                if let Some(b) = l.as_mut().filter(|b| !b.is_empty()) {
                    self.append(b.as_bytes());
                    b.clear();
                }
            }
        });
    }
}

static INSTALLED: OnceLock<(LogSink, bool)> = OnceLock::new();

/// Makes `sink` the process's log output for lines written outside `tracing` (the access log);
/// `json`: the configured `log_format` is JSON. The first call wins.
pub fn install(sink: LogSink, json: bool) {
    let _ = INSTALLED.set((sink, json));
}

/// The installed sink and whether lines are JSON; `None` when [`install`] was never called.
pub fn installed() -> Option<(&'static LogSink, bool)> {
    INSTALLED.get().map(|(s, j)| (s, *j))
}

/// One event's writer: `tracing_subscriber::fmt` formats the whole line first and writes it in
/// one `write_all`, which lands here as one append.
pub struct SinkWriter<'a>(&'a LogSink);

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // This thread's gathered lines first: its lines stay in the order it wrote them.
        self.0.flush_local();
        self.0.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = SinkWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that records what was written, and in how many writes.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut g = self.0.lock().unwrap();
            g.0.extend_from_slice(buf);
            g.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_whole_and_in_order_per_thread_in_few_writes() {
        let rec = Recorder::default();
        let (sink, guard) = LogSink::new(Box::new(rec.clone())).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        sink.append(format!("t{t} line {i}\n").as_bytes());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let (bytes, writes) = rec.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000);
        for t in 0..4 {
            let mine: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .collect();
            let want: Vec<String> = (0..5000).map(|i| format!("t{t} line {i}")).collect();
            assert_eq!(mine, want, "thread {t}'s lines are whole and in order");
        }
        assert!(
            writes < 2000,
            "{writes} writes for 20,000 lines: not batched"
        );
    }

    #[test]
    fn a_batching_thread_hands_its_lines_over_in_order_when_full_or_flushed() {
        let rec = Recorder::default();
        let (sink, guard) = LogSink::new(Box::new(rec.clone())).unwrap();
        let t = {
            let sink = sink.clone();
            std::thread::spawn(move || {
                batch_this_thread();
                // Gathered: nothing reaches the shared buffer yet.
                sink.append_with(|l| l.push_str("access 1\n"));
                sink.append_with(|l| l.push_str("access 2\n"));
                let held = LOCAL.with(|l| l.borrow().as_ref().unwrap().len());
                // Another line this thread writes (a `tracing` event) comes after them.
                SinkWriter(&sink).write_all(b"warn 3\n").unwrap();
                // A full batch is handed over without a flush.
                let line = "x".repeat(99) + "\n";
                let mut lines = 0;
                while LOCAL.with(|l| l.borrow().as_ref().unwrap().len()) + 100 < LOCAL_BATCH {
                    sink.append_with(|l| l.push_str(&line));
                    lines += 1;
                }
                sink.append_with(|l| l.push_str(&line));
                let full = LOCAL.with(|l| l.borrow().as_ref().unwrap().len());
                sink.append_with(|l| l.push_str("access last\n"));
                let before_flush = LOCAL.with(|l| l.borrow().as_ref().unwrap().len());
                sink.flush_local();
                (held, lines + 1, full, before_flush)
            })
        };
        let (held, xs, full, before_flush) = t.join().unwrap();
        assert_eq!(
            held,
            b"access 1\naccess 2\n".len(),
            "a batching thread's lines wait in the thread"
        );
        assert_eq!(full, 0, "a full batch is handed over at once");
        assert_eq!(before_flush, b"access last\n".len());
        // A thread that does not batch appends at once.
        sink.append_with(|l| l.push_str("other\n"));
        drop(guard);
        let text = String::from_utf8(rec.0.lock().unwrap().0.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(&lines[..3], ["access 1", "access 2", "warn 3"]);
        assert_eq!(lines.len(), 3 + xs + 2);
        assert_eq!(lines[3 + xs], "access last");
        assert_eq!(lines[4 + xs], "other");
    }

    #[test]
    fn a_lone_line_is_written_soon_without_more_traffic() {
        let rec = Recorder::default();
        let (sink, _guard) = LogSink::new(Box::new(rec.clone())).unwrap();
        sink.append(b"hello\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while rec.0.lock().unwrap().0.is_empty() {
            assert!(std::time::Instant::now() < deadline, "line never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(rec.0.lock().unwrap().0, b"hello\n");
    }

    /// An output that blocks until released: writers must wait (not drop) once the buffer is full.
    struct Stuck(Arc<(Mutex<bool>, Condvar)>, Recorder);

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (m, c) = &*self.0;
            let mut open = m.lock().unwrap();
            while !*open {
                open = c.wait(open).unwrap();
            }
            self.1.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_output_makes_writers_wait_and_loses_nothing() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let rec = Recorder::default();
        let (sink, guard) = LogSink::new(Box::new(Stuck(gate.clone(), rec.clone()))).unwrap();
        let line = vec![b'x'; 1023];
        let total = (MAX_PENDING / 1024) * 3;
        let writer = {
            let sink = sink.clone();
            let mut line = line.clone();
            line.push(b'\n');
            std::thread::spawn(move || {
                for _ in 0..total {
                    sink.append(&line);
                }
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !writer.is_finished(),
            "the writer should be waiting for room"
        );
        {
            let pending = sink.shared.lock().buf.len();
            assert!(pending <= MAX_PENDING + 1024, "{pending} bytes pending");
        }
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        writer.join().unwrap();
        drop(guard);
        assert_eq!(rec.0.lock().unwrap().0.len(), total * 1024);
    }

    #[test]
    fn lines_after_the_end_still_reach_the_output() {
        let rec = Recorder::default();
        let (sink, guard) = LogSink::new(Box::new(rec.clone())).unwrap();
        sink.append(b"before\n");
        drop(guard);
        sink.append(b"after\n");
        assert_eq!(rec.0.lock().unwrap().0, b"before\nafter\n");
    }
}
