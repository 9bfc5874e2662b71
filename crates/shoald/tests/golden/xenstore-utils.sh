#!/usr/bin/env bash
# Runs Debian's xenstore-utils against the daemon at $XENSTORED_PATH and
# prints a transcript: each command, its output, its error output and its
# exit status. The transcript from the stock C daemon is kept beside this
# script (cxenstored.txt); the shoald tests compare theirs with it.
#
#   XENSTORED_PATH=/path/to/socket ./xenstore-utils.sh > transcript.txt
#
# Siblings are created in name order: cxenstored lists children in the
# order they were created, oxenstored and shoald in name order.
set -u
run() {
  echo "\$ $*"
  out=$("$@" 2>/tmp/xs-golden-err.$$); rc=$?
  [ -n "$out" ] && printf '%s\n' "$out"
  sed 's/^/stderr: /' /tmp/xs-golden-err.$$
  echo "rc=$rc"
}
trap 'rm -f /tmp/xs-golden-err.$$' EXIT

run xenstore-ls /
run xenstore-write /local/domain/7/memory/target 1048576 /local/domain/7/name web-7
run xenstore-read /local/domain/7/name
run xenstore-read -p /local/domain/7/name /local/domain/7/memory/target
run xenstore-read /local/domain/7/missing
run xenstore-read /local/domain/7/name /local/domain/7/missing
run xenstore-list /local/domain/7
run xenstore-list /local/domain/8
run xenstore-list -p /local/domain/7
run xenstore-ls /local
run xenstore-ls -f /local/domain/7
run xenstore-ls -p /local
run xenstore-exists /local/domain/7
run xenstore-exists /local/domain/8
run xenstore-exists /local/domain/7/name /local/domain/8
run xenstore-write /v-esc 'a\x41\101\n' /w-odd 'tab	newline
quote"backslash\'
run xenstore-read /v-esc /w-odd
run xenstore-ls -f /v-esc
run xenstore-ls -f /w-odd
run xenstore-write /x-empty ''
run xenstore-read /x-empty
run xenstore-write /bad/path/ x
run xenstore-write '/bad path' x
run xenstore-write relative x
run xenstore-read /local/domain/0/relative
run xenstore-rm /local/domain/0
run xenstore-read ''
# Only domain 0 in permissions: without Xen, cxenstored cannot look up
# other domains (their permissions are tested against shoald alone).
run xenstore-chmod /local/domain/7 n0 r0
run xenstore-ls -p /local/domain
run xenstore-chmod -r /local/domain/7 b0
run xenstore-ls -p /local/domain
run xenstore-chmod /local/domain/7 x0
run xenstore-chmod /local/domain/9 b0
run xenstore-chmod /local/domain/7 n0 r0 w0 b0 n0 r0
run xenstore-rm /local/domain/7/memory
run xenstore-list /local/domain/7
run xenstore-rm /local/domain/7/memory
run xenstore-rm /local/domain/7/memory/target
run xenstore-write /local/domain/8/name db-8
run xenstore-rm -t /local/domain/7/name
run xenstore-list /local/domain
run xenstore-rm -t /local/domain/8/name
run xenstore-ls /
run xenstore-rm /v-esc /w-odd /x-empty
run xenstore-ls /
