"""`llmos web`: a console in the browser, a userland program like `llmos top`.

`console.py` holds the one attached client and turns what it reads through
syscalls into the page's state; `app.py` is the Starlette app that serves
the page (static files from this package: no CDN, no build step), the state
as server-sent events, a process's details, the Perfetto trace and, with the
kernel's admin key, the scheduling-policy switch; `auth.py` checks the
token every request must carry.
"""
