"""Throughput and memory benchmarks of dicom-adapter against dcmtk and Orthanc (see README.md)."""
