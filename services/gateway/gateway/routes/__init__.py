"""The HTTP routes, one module per resource; each is a thin shell over the gateway's parts."""
