"""The RPC protocol without I/O: typed frames (:mod:`.frames`), the connection state
(:mod:`.state`), and the server and client protocol objects the pumps drive."""
