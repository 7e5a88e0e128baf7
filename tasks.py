"""Lightrail's command line: `invoke --list`. Tasks live in lightrail/cli/; this file wires them."""
from invoke import Collection

from lightrail.cli import bench, catalog, dev, migrate, ops, smoke

ns = Collection()
ns.add_task(dev.test)
ns.add_task(catalog.patterns)
ns.add_task(catalog.plan)
ns.add_task(catalog.render)
ns.add_task(smoke.smoke)
for _task in (ops.doctor, ops.prereqs, ops.deploy, ops.status, ops.teardown, ops.up, ops.down):
    ns.add_task(_task)
ns.add_task(migrate.migrate)
ns.add_collection(bench.ns)
