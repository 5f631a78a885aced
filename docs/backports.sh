# Sourced by the set-up scripts (incus-setup.sh, qemu-setup.sh): adds the
# bookworm-backports suite of the mirror the host already uses to apt's
# sources, once. The caller runs `apt-get update` afterwards.
add_backports() {
  local list=/etc/apt/sources.list.d/strata-backports.sources
  local oneline=/etc/apt/sources.list.d/strata-backports.list
  [ -e "$list" ] || [ -e "$oneline" ] && return 0
  local src=/etc/apt/sources.list.d/debian.sources
  if [ -e "$src" ]; then
    # The first stanza (the main archive), with its suite turned into backports.
    awk 'BEGIN{RS=""; ORS="\n"} NR==1' "$src" \
      | sed -E 's/^Suites:.*/Suites: bookworm-backports/' > "$list"
  else
    # One-line sources.list: the first main-archive line.
    local line
    line=$(grep -E '^deb [^#]*[[:space:]]bookworm[[:space:]]' /etc/apt/sources.list | head -n1)
    [ -n "$line" ] || { echo "strata: no bookworm line in the apt sources" >&2; return 1; }
    echo "$line" | sed -E 's/[[:space:]]bookworm[[:space:]]/ bookworm-backports /' > "$oneline"
  fi
}
