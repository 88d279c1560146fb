# The SIP front end is tested against real peers: sipp (package sip-tester) runs the scenarios
# in crates/ampel-server/tests/sipp/, and baresip publishes and watches presence.
need_packages sip-tester baresip
