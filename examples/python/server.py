# The tutorial's server, as a meshrpc node: only the import and the constructor changed.
import meshrpc

class MyServer:
    def add(self, a, b):
        return a + b

server = meshrpc.Node("py-server", listen="localhost:8000")
server.register_instance(MyServer())
server.serve_forever()
