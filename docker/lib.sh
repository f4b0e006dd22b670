# Shared by the docker test scripts (docker/test.sh, and the others beside it): source it, after setting
#   VAE_SCRIPT   the script's name for messages (e.g. docker/test.sh)
#   ROOT         the repository root
# It defines the dockerd every script uses (one data-root, one exec-root, a lock that makes runs wait for each
# other), the phase timings, and how a Debian base image is made from the mirror this host's apt already uses.
#
# Environment (all optional):
#   DOCKER_DATA_ROOT   dockerd's data-root, kept between runs (image layers, BuildKit caches)   default /var/tmp/vae-docker
#   VAE_DOCKER_LOCK_WAIT_S   how long a script waits for another one holding the data-root      default 3600
#   DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR   where mmdebstrap gets a base image from; default: the URIs this host's
#                      apt uses for that release and its -security suite, else for the host's own release (one
#                      mirror serves every release), read from /etc/apt (see apt_mirror_for)
#   VAE_REFRESH_BASE=1 re-create the base images (security updates)
#   VAE_DOCKER_KEEP_STORAGE  build cache kept in the data-root after the run   default 12GB

readonly DOCKER=/usr/bin/docker  # Debian's 20.10 client: a newer docker earlier in PATH may lack BuildKit (buildx)
readonly DOCKER_DATA_ROOT="${DOCKER_DATA_ROOT:-/var/tmp/vae-docker}"
# dockerd's exec-root and socket: a short fixed path (unix socket paths are limited to 107 bytes; a fixed path
# also lets the next run clean up after a run that was killed before its trap ran).
readonly EXEC_ROOT=/tmp/vae-dockerd
readonly DOCKER_SOCK="${EXEC_ROOT}/docker.sock"
DOCKERD_PID=""

export DOCKER_HOST="unix://${DOCKER_SOCK}"
export PATH="/usr/bin:${PATH}"  # docker-compose runs `docker`: Debian's
export COMPOSE_INTERACTIVE_NO_CLI=1
export DOCKER_BUILDKIT=1

log() { echo "${VAE_SCRIPT}: $*"; }
die() { echo "${VAE_SCRIPT}: FAILED: $*" >&2; exit 1; }

# Prints the first URI (without a trailing slash) from which the apt configuration under $2 (default /etc/apt)
# fetches `deb` packages of suite $1, e.g. `apt_mirror_for bookworm-security`; returns 1 when no enabled source has
# that suite. Reads sources.list and sources.list.d/*.list (one-line format: `deb [options] URI SUITE COMPONENTS`)
# and sources.list.d/*.sources (deb822 stanzas: Types, URIs, Suites, Enabled), in apt's order.
apt_mirror_for() {
  local suite="$1" etc="${2:-/etc/apt}" file uri
  for file in "${etc}/sources.list" "${etc}"/sources.list.d/*.list "${etc}"/sources.list.d/*.sources; do
    [ -f "${file}" ] || continue
    if [[ "${file}" == *.sources ]]; then
      uri="$(awk -v want="${suite}" '
        function has(list, word,   n, i, a) { n = split(list, a, /[ \t]+/); for (i = 1; i <= n; i++) if (a[i] == word) return 1; return 0 }
        function first(list,   n, i, a) { n = split(list, a, /[ \t]+/); for (i = 1; i <= n; i++) if (a[i] != "") return a[i]; return "" }
        function stanza_end() {
          if (has(f["types"], "deb") && tolower(first(f["enabled"])) != "no" && has(f["suites"], want)) {
            print first(f["uris"]); found = 1; exit  # exit runs END: found keeps it from printing twice
          }
          delete f
        }
        /^[ \t]*#/ { next }
        /^[ \t]*$/ { stanza_end(); next }
        /^[ \t]/ { f[key] = f[key] " " $0; next }  # a continuation line
        { key = tolower(substr($0, 1, index($0, ":") - 1)); f[key] = substr($0, index($0, ":") + 1) }
        END { if (!found) stanza_end() }' "${file}")"
    else
      uri="$(awk -v want="${suite}" '
        { sub(/#.*/, ""); gsub(/\[[^]]*\]/, "") }
        $1 == "deb" && $3 == want { print $2; exit }' "${file}")"
    fi
    uri="$(echo "${uri}" | tr -d ' \t')"
    if [ -n "${uri}" ]; then
      echo "${uri%/}"
      return 0
    fi
  done
  return 1
}

# mirrors_for CODENAME: sets MIRROR and SECURITY_MIRROR for that Debian release: DEBIAN_MIRROR and
# DEBIAN_SECURITY_MIRROR when set, else the host's apt sources for CODENAME and CODENAME-security, else for the
# host's own release (a Debian mirror serves every release, so its URI serves CODENAME too).
mirrors_for() {
  local codename="$1" host_codename
  host_codename="$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")"
  MIRROR="${DEBIAN_MIRROR:-$(apt_mirror_for "${codename}" || apt_mirror_for "${host_codename:-none}" || true)}"
  SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-$(apt_mirror_for "${codename}-security" ||
    apt_mirror_for "${host_codename:-none}-security" || true)}"
}

# --- phase timings -----------------------------------------------------------------------------------------------
PHASES=()
phase_name=""
phase_start=0
phase() {  # phase NAME: ends the current phase (recording its time) and starts NAME
  local now=${SECONDS}
  if [ -n "${phase_name}" ]; then
    PHASES+=("$(printf '%-34s %4ds' "${phase_name}" $((now - phase_start)))")
  fi
  phase_name="$1"
  phase_start=${now}
  [ -n "${phase_name}" ] && log "=== ${phase_name}"
  return 0
}
print_timings() {
  local p
  echo "${VAE_SCRIPT}: timings"
  for p in "${PHASES[@]}"; do echo "  ${p}"; done
  printf '  %-34s %4ds\n' "total" "${SECONDS}"
}

# --- packages ----------------------------------------------------------------------------------------------------
# need_packages PKG...: apt-get installs those missing (docker.io's postinst is kept from starting a system dockerd).
need_packages() {
  local missing=() p policy_rc=0
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "${p}" 2>/dev/null | grep -q "install ok installed" || missing+=("${p}")
  done
  [ "${#missing[@]}" -gt 0 ] || return 0
  log "apt-get install ${missing[*]}"
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy_rc=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
    { [ "${policy_rc}" -eq 0 ] || rm -f /usr/sbin/policy-rc.d; die "apt-get install ${missing[*]} failed"; }
  [ "${policy_rc}" -eq 0 ] || rm -f /usr/sbin/policy-rc.d
}

# --- dockerd -------------------------------------------------------------------------------------------------------
# Unmounts every mount point under $1, deepest first (dockerd leaves its netns mount under the exec-root).
unmount_under() {
  local prefix="$1" target
  findmnt -rn -o TARGET | awk -v p="${prefix}/" 'index($0, p) == 1 || $0 == substr(p, 1, length(p) - 1)' |
    sort -r | while read -r target; do
      umount "${target}" 2>/dev/null || umount -l "${target}" 2>/dev/null || echo "cannot unmount ${target}" >&2
    done
}

# Stops the dockerd with PID $1 (TERM, then KILL after 30 s) and cleans its exec-root.
stop_dockerd() {
  local pid="$1" i
  if [ -n "${pid}" ] && kill -0 "${pid}" 2>/dev/null; then
    kill -TERM "${pid}" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do
      kill -0 "${pid}" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "${pid}" 2>/dev/null; then
      log "dockerd ${pid} did not stop in 30 s: SIGKILL"
      kill -KILL "${pid}" 2>/dev/null || true
      sleep 1
    fi
  fi
  unmount_under "${EXEC_ROOT}"
  unmount_under "${DOCKER_DATA_ROOT}"  # container rootfs/shm mounts, should a container outlive a killed dockerd
  # Never rm -rf across a mount point that is still there.
  if findmnt -rn -o TARGET | grep -q "^${EXEC_ROOT}/"; then
    echo "${VAE_SCRIPT}: mounts remain under ${EXEC_ROOT}; not deleting it" >&2
  else
    rm -rf "${EXEC_ROOT}"
  fi
}

# start_dockerd LOGFILE: takes the data-root's lock (waiting while another script holds it), stops a dockerd that a
# killed run left behind, starts dockerd on DOCKER_SOCK and waits until it answers. Sets DOCKERD_PID. Callers stop
# it with `stop_dockerd "${DOCKERD_PID}"` (from their EXIT trap).
start_dockerd() {
  local logfile="$1" stale i
  mkdir -p "${DOCKER_DATA_ROOT}"
  # One run at a time per data-root. (fd 9 is closed for dockerd, so a dockerd orphaned by a killed run does not
  # keep the lock.)
  exec 9>"${DOCKER_DATA_ROOT%/}.lock"
  if ! flock -n 9; then
    log "another docker script holds ${DOCKER_DATA_ROOT%/}.lock: waiting up to ${VAE_DOCKER_LOCK_WAIT_S:-3600} s"
    flock -w "${VAE_DOCKER_LOCK_WAIT_S:-3600}" 9 || die "${DOCKER_DATA_ROOT} stayed locked by another docker script"
  fi
  # A dockerd left behind by a run that was killed before its trap ran: we hold the lock, so it is nobody's.
  if [ -f "${EXEC_ROOT}/dockerd.pid" ]; then
    stale="$(cat "${EXEC_ROOT}/dockerd.pid" 2>/dev/null || true)"
    if [ -n "${stale}" ] && grep -qa dockerd "/proc/${stale}/cmdline" 2>/dev/null; then
      log "stopping dockerd ${stale} left by an earlier run"
    else
      stale=""
    fi
    stop_dockerd "${stale}"
  fi
  mkdir -p "${EXEC_ROOT}"
  dockerd --data-root="${DOCKER_DATA_ROOT}" --exec-root="${EXEC_ROOT}/exec" --pidfile="${EXEC_ROOT}/dockerd.pid" \
    --host="${DOCKER_HOST}" >"${logfile}" 2>&1 9>&- &
  DOCKERD_PID=$!
  for ((i = 0; i < 120; i++)); do
    "${DOCKER}" version >/dev/null 2>&1 && break
    kill -0 "${DOCKERD_PID}" 2>/dev/null || die "dockerd exited at start (its log: $(tail -n 5 "${logfile}"))"
    sleep 0.5
  done
  "${DOCKER}" version --format 'dockerd {{.Server.Version}} (pid '"${DOCKERD_PID}"'), data-root '"${DOCKER_DATA_ROOT}" ||
    die "dockerd did not answer on ${DOCKER_SOCK} within 60 s"
}

# prune_docker: keeps the data-root bounded (untagged images; build cache beyond the limit, least recently used
# first). Call it before stop_dockerd.
prune_docker() {
  timeout 120 "${DOCKER}" image prune -f >/dev/null 2>&1
  timeout 120 "${DOCKER}" builder prune -f --keep-storage "${VAE_DOCKER_KEEP_STORAGE:-12GB}" >/dev/null 2>&1
  return 0
}

# --- base images ---------------------------------------------------------------------------------------------------
# make_base_image CODENAME IMAGE: makes IMAGE (e.g. debian:trixie-slim) from Debian's mirror with mmdebstrap
# --variant=minbase | docker import, once per data-root (VAE_REFRESH_BASE=1: again). Like Docker's official slim
# images: no manuals, docs (but the copyrights) or translations, also in what Dockerfiles install later (the options
# stay in /etc/dpkg/dpkg.cfg.d).
make_base_image() {
  local codename="$1" image="$2"
  if [ "${VAE_REFRESH_BASE:-0}" = 1 ]; then "${DOCKER}" rmi -f "${image}" >/dev/null 2>&1 || true; fi
  if "${DOCKER}" image inspect "${image}" >/dev/null 2>&1; then
    log "${image}: present ($("${DOCKER}" image inspect -f '{{.Created}}' "${image}"))"
    return 0
  fi
  mirrors_for "${codename}"
  [ -n "${MIRROR}" ] && [ -n "${SECURITY_MIRROR}" ] ||
    die "no apt source of this host serves ${codename} and ${codename}-security: set DEBIAN_MIRROR and DEBIAN_SECURITY_MIRROR"
  log "${image}: mmdebstrap --variant=minbase ${codename} from ${MIRROR} and ${SECURITY_MIRROR}"
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
      "${MIRROR}" "${codename}" "${MIRROR}" "${codename}" "${SECURITY_MIRROR}" "${codename}" |
    mmdebstrap --quiet --variant=minbase --format=tar \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
      --aptopt='Acquire::Languages "none"' \
      "${codename}" - - |
    "${DOCKER}" import --change 'CMD ["bash"]' --message "mmdebstrap --variant=minbase ${codename}" - "${image}" \
      >/dev/null
  log "${image}: $("${DOCKER}" image inspect -f '{{.Size}}' "${image}" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
}
