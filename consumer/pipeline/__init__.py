"""The stages a batch flows through, in order.

ingest (decode, check, clean) -> align (each partition's three site topics in observation
order) -> windows, which for every evaluation window runs buffer (rows into the star stores),
trigger (the AlertFinder), vetting and scoring (LensNet and the alerts it decides). Each stage
takes what it needs and returns its output; none holds a Kafka client.
"""
