"""dicom-adapter core: config, DICOMweb and DIMSE clients, spool, services; drives plugins."""
