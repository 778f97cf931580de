"""The Kafka edge: everything that touches Kafka, Avro or a person.

Wire formats in and out (photometry batches, alerts, schemas, message keys), the Kafka clients
and topics, the exactly-once output, the replay producer's sink, and the follow-up client
(``lensnet alerts``) with its plots. Nothing here decides anything about a star.
"""
