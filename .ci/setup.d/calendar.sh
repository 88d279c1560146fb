# Calendar tests run a real CalDAV server: Radicale.
need_packages radicale
