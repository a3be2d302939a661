"""Import plugin: DIMSE SCP that forwards what a PACS sends to a DICOMweb store."""
