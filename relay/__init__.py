"""The IDMZ data path: OT-facing broker -> checks -> audit -> IT-facing broker, one way only.

>>> from relay.appliance import Appliance
>>> appliance = Appliance(config, audit=audit_log)  # config: relay.config.ApplianceConfig  # doctest: +SKIP
>>> appliance.start()  # managed brokers up, N workers connected  # doctest: +SKIP
>>> appliance.stop()  # doctest: +SKIP

See docs/relay.md for the data path, configuration, failure behaviour and metrics.
"""
