"""DCE/RPC over named pipes (MS-RPCE, C706 connection-oriented), as far as share listings and
name lookups need it: the PDUs (`pdu`), the NDR they carry (`ndr`), one pipe's association
(`endpoint`) and the interfaces served, srvsvc, wkssvc and lsarpc. Sans-I/O like the rest of
the core: bytes written to a pipe in, bytes for the client to read out."""
