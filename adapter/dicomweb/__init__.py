"""DICOMweb (PS3.18) clients: STOW-RS, QIDO-RS, WADO-RS over one pooled, authenticated session."""
