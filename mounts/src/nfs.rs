//! (front end under construction)
