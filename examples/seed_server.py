import sys, xmlrpc.server

class MyServer:
    def square(self, x):
        return x * x

    def cube(self, x):
        return x * x * x

server = xmlrpc.server.SimpleXMLRPCServer(("localhost", int(sys.argv[1])), logRequests=False)
server.register_instance(MyServer())
print("ready", flush=True)
server.serve_forever()
