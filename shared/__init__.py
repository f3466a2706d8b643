"""What every Spinup service shares: contracts, the bus, the event log, plans, settings, crypto."""
