"""DCE/RPC over named pipes (MS-RPCE, C706 connection-oriented), just enough to list shares:
the PDUs (`pdu`), the NDR they carry (`ndr`), one pipe's association (`endpoint`) and the two
interfaces served, srvsvc and wkssvc. Sans-I/O like the rest of the core: bytes written to a
pipe in, bytes for the client to read out."""
