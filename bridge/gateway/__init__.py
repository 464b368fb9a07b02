"""The gateway: FHIR interactions in, SOAP calls out, through compiled mappings."""

from bridge.gateway.bundles import BundleInteractions
from bridge.gateway.core import Served
from bridge.gateway.writes import PreconditionFailed, WriteResult

__all__ = ["Gateway", "PreconditionFailed", "Served", "WriteResult"]


class Gateway(BundleInteractions):
    """Every interaction: read, search (with paging and includes), create, update,
    patch, delete and batch/transaction Bundles, over the systems it was built from."""
