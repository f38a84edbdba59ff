"""An IVOA TAP 1.1 service's library side: ADQL translation, TAP_SCHEMA, VOTable and UWS documents.

Nothing here imports FastAPI: ``labservice.routers.tap`` parses the HTTP parameters and calls
:class:`~labservice.datasets.tap.service.TapService`; the async queries run as the ``tap`` job kind
(``labservice.jobs.kinds.tap``) through the job engine.
"""
