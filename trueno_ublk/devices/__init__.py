"""What the CLI and the daemon share about devices: their records and
states, the admin client, the kernel's devices, the checks on settings,
teardown and handover."""
