# twistd's plugin scan imports this file: keep it to one lazy line, so that
# `twistd --help` never imports the application.
from twisted.application.service import ServiceMaker

imd = ServiceMaker(
    "imd",
    "imd.tap",
    "imd instant-messaging server (seed 001/002/003/004 clients over one core)",
    "imd",
)
