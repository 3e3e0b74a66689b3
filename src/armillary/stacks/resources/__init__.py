"""Armillary's own stack resource types (entry point ``armillary.stack_resources``: ``TYPES``)."""

from __future__ import annotations

from armillary.stacks.resources.cluster import ClusterResource
from armillary.stacks.resources.deploy import DeployResource
from armillary.stacks.resources.dns_record import DnsRecordResource
from armillary.stacks.resources.ip_reservation import IpReservationResource
from armillary.stacks.resources.profile import ProfileResource
from armillary.stacks.resources.stack import NestedStackResource
from armillary.stacks.resources.system import SystemResource

TYPES = (SystemResource, ProfileResource, ClusterResource, IpReservationResource, DnsRecordResource,
         NestedStackResource, DeployResource)
