"""DIMSE (PS3.7) server and client on pynetdicom."""
