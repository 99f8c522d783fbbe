web.default.svc.cluster.local A
nope.default.svc.cluster.local A
