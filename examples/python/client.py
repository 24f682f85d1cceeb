# The tutorial's client: only the import and the URL's scheme changed.
import meshrpc

server = meshrpc.ServerProxy("mesh://localhost:8000")
result = server.add(2, 3)
print(result)
