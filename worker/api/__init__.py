"""`sor api`: the HTTP front of the router (the seed's endpoints and Binance's SOR endpoints).

It never executes: orders become ``OrderIntent`` records on the intents topic, and the
worker's ``ExecutionResult`` comes back on the executions topic.
"""
