"""bench_trial_tracking.py --requests: put on a sweep worker's PYTHONPATH, this records every HTTP
request the process makes through ``requests`` (MLflow's client uses it) as "<unix time> <method>
<path>" lines in $ECOSPLIT_REQUEST_LOG/<pid>.txt. Not used by the project itself."""
import os
import threading
import time
from urllib.parse import urlparse

import requests.sessions

_FOLDER = os.environ.get("ECOSPLIT_REQUEST_LOG")
if _FOLDER:
    _lock = threading.Lock()
    _out = open(os.path.join(_FOLDER, f"{os.getpid()}.txt"), "a", buffering=1)
    _request = requests.sessions.Session.request

    def request(self, method, url, *args, **kwargs):
        with _lock:
            _out.write(f"{time.time():.6f} {method} {urlparse(url).path}\n")
        return _request(self, method, url, *args, **kwargs)

    requests.sessions.Session.request = request
