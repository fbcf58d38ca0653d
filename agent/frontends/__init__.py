"""Front-ends at the edge of the data flow: each one only calls `agent.Agent`."""
