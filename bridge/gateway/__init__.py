"""The gateway: FHIR interactions in, SOAP calls out, through compiled mappings."""

from bridge.gateway.core import Served
from bridge.gateway.writes import PreconditionFailed, WriteInteractions, WriteResult

__all__ = ["Gateway", "PreconditionFailed", "Served", "WriteResult"]


class Gateway(WriteInteractions):
    """Every interaction: read, search (with paging and includes), create, update,
    patch and delete, over the systems it was built from."""
