"""Which services exist, their gRPC names and where each listens."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from google.protobuf.descriptor import ServiceDescriptor

from services.kit.settings import Settings


@dataclass(frozen=True)
class ServiceSpec:
    """One of the platform's gRPC services."""

    name: str
    full_name: str
    port_offset: int

    @property
    def module(self) -> str:
        return f"services.{self.name}.main"

    @property
    def descriptor(self) -> ServiceDescriptor:
        """The service's descriptor, from its generated module."""
        package = self.full_name.rsplit(".", 1)[0]
        module = importlib.import_module(f"{package}.{self.name}_service_pb2")
        service: ServiceDescriptor = module.DESCRIPTOR.services_by_name[self.full_name.rsplit(".", 1)[1]]
        return service

    def port(self, settings: Settings) -> int:
        return settings.port_base + self.port_offset

    def target(self, settings: Settings) -> str:
        return f"{client_host(settings)}:{self.port(settings)}"


def client_host(settings: Settings) -> str:
    """Where clients on this machine reach servers bound to `bind_host`."""
    return "localhost" if settings.bind_host in ("0.0.0.0", "127.0.0.1", "::") else settings.bind_host  # noqa: S104


SERVICES: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in (
        ServiceSpec("invoice", "bmc.invoice.v1.InvoiceService", 1),
        ServiceSpec("product", "bmc.product.v1.ProductService", 2),
        ServiceSpec("ocr", "bmc.ocr.v1.OcrService", 3),
        ServiceSpec("commission", "bmc.commission.v1.CommissionService", 4),
        ServiceSpec("certificate", "bmc.certificate.v1.CertificateService", 5),
    )
}

# The service that answers the edge's reflection and health for the platform as a whole.
PLATFORM_REFLECTION = "invoice"
