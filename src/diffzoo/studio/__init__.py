"""diffzoo studio: a local web app over the public API (a consumer: nothing imports it but ``cli/studio.py``).

* :mod:`~diffzoo.studio.runs` -- the panels (Edit, Restore, Sample): validation with the CLI's checks, runs,
  result cards with metrics, and the settings JSON with the ``diffzoo`` commands that reproduce each result;
* :mod:`~diffzoo.studio.audit` -- the Audit panel's family protocol (detectors, watermarks, attacks);
* :mod:`~diffzoo.studio.jobs` -- one background run at a time, progress from network calls, cancellation;
* :mod:`~diffzoo.studio.app` -- the FastAPI routes and the static page (``static/``), :func:`serve`.
"""

from diffzoo.studio.app import create_app, serve
from diffzoo.studio.jobs import Busy, Cancelled, JobManager
from diffzoo.studio.runs import Studio

__all__ = ["Busy", "Cancelled", "JobManager", "Studio", "create_app", "serve"]
