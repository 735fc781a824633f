#!/usr/bin/env bash
# Builds the Debian package with cargo-deb, installs it with dpkg, checks what it put where and
# runs `portcullis check` on the packaged config, then purges it again (KEEP_DEB_INSTALLED=1
# leaves it installed). Run from anywhere; needs root or sudo for dpkg. CI runs it from .ci/run.
# cargo-deb is installed with `cargo install cargo-deb --locked` when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
fail() {
  echo "check-deb: FAIL: $*" >&2
  exit 1
}
started=$(date +%s)

if ! cargo deb --version >/dev/null 2>&1; then
  echo "== installing cargo-deb"
  cargo install cargo-deb --locked
fi

echo "== cargo deb ($(cargo deb --version))"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# The last line cargo-deb prints on stdout is the path of the package it wrote.
deb="$(cargo deb --output "$out" | tail -n 1)"
[ -f "$deb" ] || fail "cargo deb did not report a package file (got: $deb)"
built=$(date +%s)
echo "   $deb ($(du -h "$deb" | cut -f1)), built in $((built - started)) s"

echo "== contents"
contents="$(dpkg-deb --contents "$deb")"
echo "$contents" | awk '{print "   " $1, $6}'
for path in ./usr/bin/portcullis ./etc/portcullis/portcullis.yaml portcullis.service \
  ./usr/share/doc/portcullis/config.example.yaml ./usr/share/doc/portcullis/deployment.md \
  ./usr/share/doc/portcullis/forward-auth/nginx.conf; do
  echo "$contents" | grep -q -- "$path" || fail "the package has no $path"
done
# systemd creates the data folder (StateDirectory, DynamicUser): the package must not.
if echo "$contents" | grep -q "/var/lib/portcullis"; then fail "the package ships /var/lib/portcullis"; fi
dpkg-deb --info "$deb" conffiles | grep -qx "/etc/portcullis/portcullis.yaml" ||
  fail "/etc/portcullis/portcullis.yaml is not a conffile"

# Maintainer scripts (ours with cargo-deb's systemd snippets spliced in) parse as sh.
mkdir "$out/control"
dpkg-deb --control "$deb" "$out/control"
for script in preinst postinst prerm postrm; do
  if [ -f "$out/control/$script" ]; then
    sh -n "$out/control/$script" || fail "the package's $script is not valid sh"
  fi
done
# Not enabled or started on install: the packaged config needs editing first.
if grep -Eq "deb-systemd-invoke (start|restart)|systemctl .*start" "$out/control/postinst"; then
  fail "postinst starts the service"
fi

echo "== dpkg -i"
$SUDO dpkg -i "$deb"
unit="$(dpkg -L portcullis | grep -E '/systemd/system/portcullis\.service$' || true)"
[ -n "$unit" ] || fail "no portcullis.service installed"
echo "   unit: $unit"
# The unit runs what the package installed, with the config it installed, in the folder the
# config names.
grep -qx "ExecStart=/usr/bin/portcullis serve --config /etc/portcullis/portcullis.yaml" "$unit" ||
  fail "$unit does not start /usr/bin/portcullis with /etc/portcullis/portcullis.yaml"
grep -qx "StateDirectory=portcullis" "$unit" || fail "$unit has no StateDirectory=portcullis"
grep -qx "data_dir: /var/lib/portcullis" /etc/portcullis/portcullis.yaml ||
  fail "the packaged config does not use the unit's StateDirectory"
[ "$(stat -c %a /etc/portcullis/portcullis.yaml)" = 644 ] ||
  fail "the config must be readable by the unit's DynamicUser (0644)"
installed_version="$(/usr/bin/portcullis --version)"
package_version="$(dpkg-query -W -f='${Version}' portcullis)"
[ "$installed_version" = "portcullis ${package_version%%-*}" ] ||
  fail "/usr/bin/portcullis says '$installed_version', the package is $package_version"
if command -v systemd-analyze >/dev/null 2>&1; then
  # Offline: needs no running systemd, only the unit and the paths it names. Its warnings about
  # the unit (unknown keys, bad values) do not change the exit status: they fail here.
  verify="$(systemd-analyze verify "$unit" 2>&1)" || fail "systemd-analyze verify $unit: $verify"
  if echo "$verify" | grep -q "portcullis.service"; then fail "systemd-analyze verify: $verify"; fi
fi

echo "== portcullis check --config /etc/portcullis/portcullis.yaml"
/usr/bin/portcullis check --config /etc/portcullis/portcullis.yaml

if [ "${KEEP_DEB_INSTALLED:-0}" != 1 ]; then
  echo "== dpkg --purge"
  $SUDO dpkg --purge portcullis
  [ ! -e /usr/bin/portcullis ] || fail "/usr/bin/portcullis is still there after purge"
  [ ! -e /etc/portcullis/portcullis.yaml ] || fail "the config is still there after purge"
fi
echo "== check-deb passed in $(($(date +%s) - started)) s (package built in $((built - started)) s)"
