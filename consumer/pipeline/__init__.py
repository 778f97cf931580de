"""The stages a batch flows through, in order: ingest (decode, check, clean) -> align (each
partition's three site topics in observation order) -> trigger (the AlertFinder) -> vetting ->
scoring (LensNet and the alerts it decides). Each stage takes what it needs and returns its
output; none holds a Kafka client.
"""
