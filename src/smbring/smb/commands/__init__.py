"""One module per SMB2 command family; each handler takes (connection, request header,
message, response header, chain) and returns (response body, FileId it used or made)."""
