# Routing: espeak-ng renders the spoken announcements, Radicale serves the CardDAV address
# book the caller lookup tests read from.
need_packages espeak-ng
if ! python3 -c 'import radicale' 2>/dev/null; then
    need_packages radicale || pip install --quiet radicale || pip install --quiet --break-system-packages radicale
fi
