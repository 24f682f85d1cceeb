# The tutorial's second client.
import meshrpc

server = meshrpc.ServerProxy("mesh://localhost:8000")
result = server.square(5)
print("The square of 5 is:", result)
result = server.cube(3)
print("The cube of 3 is:", result)
