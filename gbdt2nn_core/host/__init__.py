"""The plugin host: hook specs, component records, the interfaces components meet, registry."""
