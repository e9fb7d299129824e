"""The edges of the pipeline: the upstream emitter SDK (emitter.py), the downstream stores' Sink
protocol and runner (base/), and one folder per store shipped here (postgres/, redis/, files/,
mailing_list/); stores.py maps their names to them."""
