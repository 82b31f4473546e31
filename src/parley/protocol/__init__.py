"""The sans-I/O core shared by the client and the relay: no sockets, no clocks read."""
