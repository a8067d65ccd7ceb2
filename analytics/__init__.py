"""analytics: the economics of the fleet (asset register, utilization, idle value, cost, ROA,
the report). Reads the ledger and the invoices billing wrote; rates nothing."""
