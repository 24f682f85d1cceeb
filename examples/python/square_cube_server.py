# The tutorial's second server (two instances communicating), as a meshrpc node.
import meshrpc

class MyServer:
    def square(self, x):
        return x * x

    def cube(self, x):
        return x * x * x

server = meshrpc.Node("py-square-cube", listen="localhost:8000")
server.register_instance(MyServer())
server.serve_forever()
