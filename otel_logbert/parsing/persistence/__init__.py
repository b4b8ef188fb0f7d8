"""Parser state persistence: where a ``LogParser``'s state is kept, and when it is written.

Modelled on Drain3's persistence: ``PersistenceHandler`` (``base.py``) is the interface, one file per
backend (``file.py``: an atomically replaced file, fsynced). ``ParserPersister`` (``persister.py``) is
the one persister of a parser: it writes the parser's state to its handlers (the sidecar's
``parsing.state_file``, learn mode's ``<stem>.drain3.json``) only when the parser changed, with the
serialising and the write off the event loop.
"""

from otel_logbert.parsing.persistence.base import PersistenceHandler
from otel_logbert.parsing.persistence.file import FilePersistence
from otel_logbert.parsing.persistence.persister import ParserPersister, load_parser

__all__ = ["FilePersistence", "ParserPersister", "PersistenceHandler", "load_parser"]
