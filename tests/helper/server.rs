//! Loopback HTTP servers for tests: the simulator and small actix-web
//! servers that answer in odd ways, each on 127.0.0.1 port 0.
