"""Generated protobuf modules for libp2p's wire messages (``make proto`` regenerates them).

The ``.proto`` sources sit beside the generated ``*_pb2.py`` files. Import the generated
modules only from the codec modules that validate what they parse; nothing else touches
raw protobuf objects.
"""
