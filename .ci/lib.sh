# Helpers for the scripts in .ci/setup.d, sourced by .ci/run.

# Installs the Debian packages that are missing; the package lists are refreshed at most once.
need_packages() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    if [ ! -e /tmp/.ampel-apt-updated ]; then
        $sudo apt-get update -qq
        touch /tmp/.ampel-apt-updated
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
