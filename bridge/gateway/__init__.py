"""The gateway: FHIR interactions in, SOAP calls out, through compiled mappings."""

from bridge.gateway.core import Served
from bridge.gateway.operations import OperationInteractions
from bridge.gateway.writes import PreconditionFailed, WriteResult

__all__ = ["Gateway", "PreconditionFailed", "Served", "WriteResult"]


class Gateway(OperationInteractions):
    """Every interaction: read, search (with paging and includes), create, update,
    patch, delete and batch/transaction Bundles, over the systems it was built from."""
