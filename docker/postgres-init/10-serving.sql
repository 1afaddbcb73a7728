-- The serving database Grafana reads (tables are created by Aero on first write).
CREATE DATABASE serving;
