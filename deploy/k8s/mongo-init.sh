#!/bin/bash
# Runs beside mongod in every member; only mongo-0 acts. On first start it initiates the replica
# set and creates the root and application users through the localhost exception (no user
# exists yet, so the keyfile-secured node lets localhost do exactly that); afterwards it only
# makes sure the application user exists. Safe to run again after any restart.
set -euo pipefail
until mongosh --quiet --eval 'db.adminCommand("ping").ok' >/dev/null 2>&1; do sleep 2; done
if [ "${HOSTNAME##*-}" = "0" ]; then
  auth=(-u "$MONGO_ROOT_USERNAME" -p "$MONGO_ROOT_PASSWORD" --authenticationDatabase admin)
  if ! mongosh --quiet "${auth[@]}" --eval 'db.adminCommand("ping").ok' >/dev/null 2>&1; then
    mongosh --quiet --eval "try { rs.status() } catch (e) { rs.initiate({_id: 'rs0', members: [
      {_id: 0, host: 'mongo-0.mongo:27017', priority: 2},
      {_id: 1, host: 'mongo-1.mongo:27017'},
      {_id: 2, host: 'mongo-2.mongo:27017'}]}) }"
    mongosh --quiet --eval 'while (!db.hello().isWritablePrimary) { sleep(1000) }'
    mongosh --quiet --eval "db.getSiblingDB('admin').createUser({user: process.env.MONGO_ROOT_USERNAME,
      pwd: process.env.MONGO_ROOT_PASSWORD, roles: ['root']})"
  fi
  mongosh --quiet "${auth[@]}" --eval "const admin = db.getSiblingDB('admin');
    if (!admin.getUser(process.env.MONGO_APP_USERNAME)) { admin.createUser({user: process.env.MONGO_APP_USERNAME,
      pwd: process.env.MONGO_APP_PASSWORD, roles: [{role: 'readWrite', db: 'aigw'}, {role: 'dbAdmin', db: 'aigw'}]}) }"
  echo "replica set rs0 ready"
fi
exec sleep infinity
