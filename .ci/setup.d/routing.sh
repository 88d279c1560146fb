# Routing: espeak-ng renders the spoken announcements; Radicale serves the CardDAV address book
# that the caller lookup tests read (each test starts its own on a free port). Radicale goes
# into the Python that `python3` runs, which is where the tests start it from.
need_packages espeak-ng
if ! python3 -c 'import radicale' 2>/dev/null; then
    python3 -m pip install --quiet radicale 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages radicale
fi
