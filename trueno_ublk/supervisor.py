"""What a daemon of trueno-ublk before its layers (daemon/) execs on
`upgrade`: `from trueno_ublk.supervisor import main`. It leads to the
supervisor of today, which takes the device over (DeviceConfig.from_dict
reads the old spellings)."""
from trueno_ublk.daemon.supervisor import main

__all__ = ["main"]
